import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.errors import InvalidInput
from controlplane.identity import Actor
from policy.bundles import shipped_default_bundle
from registry.models import Artifact
from registry.services.artifacts import artifact_publish


def test_policy_test_runs_the_shipped_bundle(capsys):
    call_command("policy_test")
    out = capsys.readouterr().out
    assert "PASS baton." in out and "FAIL" not in out


def test_policy_test_fails_on_a_failing_test(tmp_path, capsys):
    (tmp_path / "a.rego").write_text(
        "package a\n\nimport rego.v1\n\ntest_truth if false\n\ntest_ok if true\n"
    )
    with pytest.raises(CommandError, match="failed"):
        call_command("policy_test", str(tmp_path))
    out = capsys.readouterr().out
    assert "FAIL a.test_truth" in out and "PASS a.test_ok" in out and "1/2 passed" in out


def test_policy_test_explains_a_folder_whose_data_is_not_json(tmp_path):
    (tmp_path / "a.rego").write_text("package a\n\nimport rego.v1\n\ntest_ok if true\n")
    (tmp_path / "data.json").write_text('{"threshold": 500,}')
    with pytest.raises(CommandError, match=r"data.json is not valid JSON: .*line 1"):
        call_command("policy_test", str(tmp_path))


@pytest.mark.django_db
def test_policy_test_refuses_a_version_of_other_digits_than_ascii():
    with pytest.raises(CommandError, match="neither a folder nor a published policy bundle"):
        call_command("policy_test", "default@²")


@pytest.mark.django_db
def test_publishing_a_bundle_whose_tests_fail_is_refused(platform_user):
    content = shipped_default_bundle().content
    actor = Actor("platform", roles=frozenset({"platform"}))
    assert artifact_publish(
        kind="policy_bundle", name="default", content=content, author=platform_user, actor=actor
    ).created
    failing = {
        **content,
        "modules": {
            **content["modules"],
            "extra_test.rego": "package extra_test\n\nimport rego.v1\n\ntest_fails if false\n",
        },
    }
    with pytest.raises(InvalidInput, match=r"test extra_test\.test_fails failed"):
        artifact_publish(
            kind="policy_bundle", name="default", content=failing, author=platform_user, actor=actor
        )
    uncompilable = {"modules": {"bad.rego": "package bad\nallow if {"}}
    with pytest.raises(InvalidInput, match="does not compile"):
        artifact_publish(
            kind="policy_bundle", name="default", content=uncompilable, author=platform_user, actor=actor
        )
    assert Artifact.objects.filter(kind="policy_bundle").count() == 1
