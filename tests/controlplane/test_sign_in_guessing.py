"""Guessing a password: after LOGIN_FAILURE_LIMIT wrong ones for a username from one address, that
pair is refused (429, a readable page) even with the right password, until the pause ends or
an administrator lifts it; other users and addresses are not held up, and API keys are not
passwords."""

import pytest
from axes.models import AccessAttempt
from axes.utils import reset
from django.test import Client

pytestmark = pytest.mark.django_db
PASSWORD = "right-password-1"


def sign_in(client: Client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.fixture
def reviewer_with_password(reviewer):
    reviewer.set_password(PASSWORD)
    reviewer.save()
    return reviewer


def test_five_wrong_passwords_pause_that_user_from_that_address(settings, reviewer_with_password):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in(client, "reviewer", "guess").status_code == 200  # the form again, with its error

    locked = sign_in(client, "reviewer", "guess")
    assert locked.status_code == 429
    assert "Too many attempts" in locked.content.decode() and "15 minutes" in locked.content.decode()
    assert sign_in(client, "reviewer", PASSWORD).status_code == 429  # the right one too, for now
    assert "_auth_user_id" not in client.session

    assert sign_in(Client(), "reviewer", PASSWORD, address="10.0.0.2").status_code == 302  # elsewhere
    reset(username="reviewer")  # what an administrator does
    assert sign_in(client, "reviewer", PASSWORD).status_code == 302


def test_a_success_forgets_earlier_failures(settings, reviewer_with_password):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "reviewer", "guess")
    assert sign_in(client, "reviewer", PASSWORD).status_code == 302
    assert not AccessAttempt.objects.filter(username="reviewer").exists()


def test_api_keys_are_not_counted_as_passwords(client_for, reviewer, settings):
    api = client_for(reviewer, ("approvals:read",))
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):
        assert Client(HTTP_AUTHORIZATION="Bearer baton_wrong").get("/api/v1/approvals").status_code == 401
    assert api.get("/api/v1/approvals").status_code == 200
    assert not AccessAttempt.objects.exists()
