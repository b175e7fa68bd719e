import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("persona", "advice", "links"),
    [
        ("requester", "As a requester:", ["/runs/"]),
        ("reviewer", "As a reviewer:", ["/approvals/", "/runs/"]),
        ("platform_user", "As a platform engineer:", ["/monitoring/", "/policy/"]),
        ("auditor", "As an auditor:", ["/evidence/", "/monitoring/"]),
        ("admin_user", "As an admin:", ["/approvals/", "/evidence/"]),
    ],
)
def test_the_landing_page_says_what_to_try_for_each_role(request, signed_in, persona, advice, links):
    response = signed_in(request.getfixturevalue(persona)).get("/")
    body = response.content.decode()
    assert response.status_code == 200 and advice in body
    for link in links:
        assert f'href="{link}' in body


def test_requesters_are_not_shown_pages_they_cannot_open(signed_in, requester):
    body = signed_in(requester).get("/").content.decode()
    assert (
        'href="/evidence/' not in body
        and 'href="/approvals/' not in body
        and 'href="/monitoring/' not in body
    )


@pytest.mark.parametrize(
    ("persona", "shown", "hidden"),
    [
        ("requester", [], ["Dashboard</a>", "Evidence</a>"]),
        ("reviewer", [], ["Dashboard</a>", "Evidence</a>"]),
        ("platform_user", ["Dashboard</a>"], ["Evidence</a>"]),
        ("auditor", ["Dashboard</a>", "Evidence</a>"], []),
    ],
)
def test_the_navigation_shows_the_pages_each_role_may_open(request, signed_in, persona, shown, hidden):
    nav = signed_in(request.getfixturevalue(persona)).get("/runs/").content.decode().split("</nav>")[0]
    assert all(item in nav for item in shown) and not any(item in nav for item in hidden)


def test_pages_name_their_icon_and_browsers_asking_for_favicon_ico_find_it(client):
    page = client.get("/login/").content.decode()
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/favicon.svg"
    assert client.get("/static/favicon.svg").status_code == 200


def test_pages_allow_scripts_from_baton_alone(signed_in, requester):
    policy = signed_in(requester).get("/")["Content-Security-Policy"]
    directives = dict(directive.strip().split(" ", 1) for directive in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
