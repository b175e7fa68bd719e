import django.db.models.deletion
import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0005_longer_lease_owner"),
    ]

    operations = [
        migrations.CreateModel(
            name="MapBranch",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "sequence",
                    models.PositiveIntegerField(help_text="The checkpoint position of the map step."),
                ),
                ("state", models.CharField(max_length=100)),
                (
                    "index",
                    models.PositiveIntegerField(help_text="Position of the element in the list mapped over."),
                ),
                ("item", models.JSONField(help_text="The element this branch works on.")),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("pending", "Pending"),
                            ("queued", "Queued"),
                            ("running", "Running"),
                            ("succeeded", "Succeeded"),
                            ("failed", "Failed"),
                            ("cancelled", "Cancelled"),
                        ],
                        default="pending",
                        max_length=20,
                    ),
                ),
                (
                    "attempts",
                    models.PositiveSmallIntegerField(default=0, help_text="Failed attempts so far."),
                ),
                ("claims_since_progress", models.PositiveSmallIntegerField(default=0)),
                (
                    "output",
                    models.JSONField(
                        blank=True, help_text="The validated output, or a {'$ref': digest}.", null=True
                    ),
                ),
                ("details", models.JSONField(default=dict, help_text="Model or tool call, decisions, cost.")),
                ("error", models.TextField(blank=True, default="")),
                ("lease_owner", models.CharField(blank=True, default="", max_length=255)),
                ("lease_expires_at", models.DateTimeField(blank=True, null=True)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                ("updated_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                (
                    "run",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="map_branches",
                        to="runs.run",
                    ),
                ),
            ],
            options={
                "ordering": ["run", "sequence", "index"],
                "indexes": [
                    models.Index(
                        condition=models.Q(("status__in", ["queued", "running"])),
                        fields=["lease_expires_at"],
                        name="map_branch_active_lease_idx",
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("run", "sequence", "index"), name="map_branch_once_per_element"
                    )
                ],
            },
        ),
    ]
