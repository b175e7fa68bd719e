import pytest
from django.core.management import call_command

from sandbox.models import DatasetBatch, SupportCase


@pytest.mark.django_db(transaction=True)
def test_the_sandbox_is_seeded_again_after_a_flush():
    call_command("flush", interactive=False, verbosity=0)
    assert SupportCase.objects.filter(case_id="CASE-1001").exists()
    assert DatasetBatch.objects.filter(dataset__slug="orders_daily").count() == 3
