from django.db import migrations, models


def unmark_duplicate_shadow_replays(apps, schema_editor):
    """Overlapping beat ticks may already have replayed a run twice for its shadow rollout: the
    first replay stays the run's shadow replay; the others are kept, as replays of their own."""
    Replay = apps.get_model("replays", "Replay")
    shadows = Replay.objects.filter(shadow=True)
    firsts = shadows.values("run").annotate(first=models.Min("pk")).values("first")
    shadows.exclude(pk__in=firsts).update(shadow=False)


class Migration(migrations.Migration):
    dependencies = [
        ("replays", "0001_replays"),
    ]

    operations = [
        migrations.RunPython(unmark_duplicate_shadow_replays, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="replay",
            constraint=models.UniqueConstraint(
                condition=models.Q(("shadow", True)), fields=("run",), name="replay_one_shadow_per_run"
            ),
        ),
    ]
