"""Registry pages: anyone signed in reads; platform users and admins change."""

from collections import defaultdict

import yaml
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from controlplane.htmx import render_page
from controlplane.identity import ADMIN, PLATFORM, actor_for, has_role
from controlplane.pages import done, paged, roles_required

from . import forms, selectors
from .diagrams import mermaid_state_diagram
from .models import Agent, Artifact, Channel, Release
from .services import agents as agent_services
from .services import releases as release_services

LIFECYCLE_ACTIONS = {
    Agent.Status.ACTIVE: "Activate",
    Agent.Status.DEPRECATED: "Deprecate",
    Agent.Status.RETIRED: "Retire",
}


def _posted(request: HttpRequest) -> dict | None:
    return request.POST if request.method == "POST" else None


@login_required
def agent_list(request: HttpRequest) -> HttpResponse:
    filters = {key: request.GET.get(key, "") for key in ("owner", "status", "classification")}
    context = {
        "page": paged(request, selectors.agents_list(**filters)),
        "filters": filters,
        "teams": selectors.teams_list(),
        "statuses": Agent.Status.choices,
        "classifications": Agent.Classification.choices,
        "can_write": has_role(request.user, PLATFORM, ADMIN),
    }
    return render_page(request, "registry/agent_list.html", "registry/_partials/agent_rows.html", context)


@login_required
def agent_detail(request: HttpRequest, slug: str) -> HttpResponse:
    return _agent_page(request, _agent_or_404(slug))


def _agent_or_404(slug: str) -> Agent:
    return get_object_or_404(selectors.agents_list().select_related("service_user"), slug=slug)


def _agent_page(request: HttpRequest, agent: Agent, lifecycle_form=None, status: int = 200) -> HttpResponse:
    allowed = agent_services.TRANSITIONS[agent.status]
    context = {
        "agent": agent,
        "history": selectors.object_history(agent),
        "releases": agent.releases.all(),
        "actions": [
            (to_status, label) for to_status, label in LIFECYCLE_ACTIONS.items() if to_status in allowed
        ],
        "lifecycle_form": lifecycle_form,
        "can_write": has_role(request.user, PLATFORM, ADMIN),
    }
    return render(request, "registry/agent_detail.html", context, status=status)


@roles_required(PLATFORM, ADMIN)
def agent_register(request: HttpRequest) -> HttpResponse:
    form = forms.AgentRegisterForm(_posted(request))
    agent = form.submit(lambda data: agent_services.agent_register(actor=actor_for(request.user), **data))
    if agent:
        return done(
            request,
            reverse("registry-agent-detail", args=[agent.slug]),
            f"Agent {agent.slug} is registered as a draft.",
        )
    return render(request, "registry/agent_form.html", {"form": form}, status=form.status_code)


@roles_required(PLATFORM, ADMIN)
def agent_edit(request: HttpRequest, slug: str) -> HttpResponse:
    agent = _agent_or_404(slug)
    form = forms.AgentEditForm(_posted(request), initial=forms.AgentEditForm.initial_for(agent))
    if form.submit(
        lambda changes: agent_services.agent_update(
            agent=agent, changes=changes, actor=actor_for(request.user)
        )
    ):
        return done(
            request, reverse("registry-agent-detail", args=[agent.slug]), f"Agent {agent.slug} is saved."
        )
    return render(
        request, "registry/agent_form.html", {"form": form, "agent": agent}, status=form.status_code
    )


@roles_required(PLATFORM, ADMIN)
@require_POST
def agent_lifecycle(request: HttpRequest, slug: str) -> HttpResponse:
    agent = _agent_or_404(slug)
    form = forms.LifecycleForm(request.POST)
    moved = form.submit(
        lambda data: agent_services.agent_transition(
            agent=agent, to_status=data["to_status"], reason=data["reason"], actor=actor_for(request.user)
        )
    )
    if moved:
        return done(
            request,
            reverse("registry-agent-detail", args=[agent.slug]),
            f"Agent {agent.slug} is {moved.status}.",
        )
    return _agent_page(request, agent, lifecycle_form=form, status=form.status_code)


@login_required
def release_list(request: HttpRequest) -> HttpResponse:
    workflow = request.GET.get("workflow", "")
    live = defaultdict(list)
    for channel in selectors.channels_list(workflow=workflow):
        live[channel.release_id].append(channel)
    page = paged(request, selectors.releases_list(workflow=workflow))
    context = {
        "page": page,
        "rows": [(release, live[release.pk]) for release in page],
        "workflows": [artifact.name for artifact in selectors.artifacts_latest(kind=Artifact.Kind.WORKFLOW)],
        "filters": {"workflow": workflow},
    }
    return render_page(request, "registry/release_list.html", "registry/_partials/release_rows.html", context)


def _release_or_404(release_id: str) -> Release:
    try:
        return selectors.release_detail(release_id)
    except Release.DoesNotExist as missing:
        raise Http404(f"No release {release_id}.") from missing


@login_required
def release_detail(request: HttpRequest, release_id: str) -> HttpResponse:
    return _release_page(request, _release_or_404(release_id))


def _release_page(request: HttpRequest, release: Release, status: int = 200, **failed_forms) -> HttpResponse:
    workflow = next(
        artifact for artifact in release.artifacts.all() if artifact.kind == Artifact.Kind.WORKFLOW
    )
    bindings = release.manifest["agents"]
    can_write = has_role(request.user, PLATFORM, ADMIN)
    context = {
        "release": release,
        "workflow": workflow,
        "diagram": mermaid_state_diagram(workflow.content),
        "bindings": [(agent, bindings.get(agent.slug, {})) for agent in release.agents.all()],
        "gate_problems": release_services.promotion_gate_problems(release),
        "channels": selectors.channels_list(workflow=release.workflow),
        "history": selectors.channel_history(release),
        "can_write": can_write,
        "can_sign_off": can_write
        and request.user.pk != release.author_id
        and all(signoff.user_id != request.user.pk for signoff in release.signoffs.all()),
        "signoff_form": forms.SignOffForm(),
        "promote_form": forms.PromoteForm(),
        "rollback_form": forms.RollbackForm(),
        **failed_forms,
    }
    return render(request, "registry/release_detail.html", context, status=status)


@roles_required(PLATFORM, ADMIN)
@require_POST
def release_sign_off(request: HttpRequest, release_id: str) -> HttpResponse:
    release = _release_or_404(release_id)
    form = forms.SignOffForm(request.POST)
    signed = form.submit(
        lambda data: release_services.release_sign_off(
            release=release, user=request.user, comment=data["comment"], actor=actor_for(request.user)
        )
    )
    if signed:
        said = "signed off" if signed.created else "had already signed off"
        return done(
            request, reverse("registry-release-detail", args=[release.pk]), f"You {said} {release.pk}."
        )
    return _release_page(request, release, signoff_form=form, status=form.status_code)


@roles_required(PLATFORM, ADMIN)
@require_POST
def release_promote(request: HttpRequest, release_id: str) -> HttpResponse:
    release = _release_or_404(release_id)
    form = forms.PromoteForm(request.POST)
    channel = form.submit(
        lambda data: release_services.release_promote(release=release, actor=actor_for(request.user), **data)
    )
    if channel:
        return done(
            request,
            reverse("registry-release-detail", args=[release.pk]),
            f"{channel} now runs {release.pk} ({channel.mode}).",
        )
    return _release_page(request, release, promote_form=form, status=form.status_code)


@roles_required(PLATFORM, ADMIN)
@require_POST
def channel_rollback(request: HttpRequest, release_id: str, channel: str) -> HttpResponse:
    release = _release_or_404(release_id)
    # A channel that has left this release meanwhile (a second click, another tab) is refused by
    # the service with the reason, never rolled back one step further.
    target: Channel = get_object_or_404(selectors.channels_list(workflow=release.workflow), name=channel)
    form = forms.RollbackForm(request.POST)
    rolled_back = form.submit(
        lambda data: release_services.channel_rollback(
            channel=target, reason=data["reason"], actor=actor_for(request.user), from_release=release.pk
        )
    )
    if rolled_back:
        return done(
            request,
            reverse("registry-release-detail", args=[release.pk]),
            f"{rolled_back} is back on {rolled_back.release_id}.",
        )
    return _release_page(request, release, rollback_form=form, status=form.status_code)


@login_required
def release_diff(request: HttpRequest) -> HttpResponse:
    both = {"from", "to"} <= request.GET.keys()
    form = forms.ReleaseDiffForm(
        request.GET if both else None, initial=request.GET.dict(), releases=selectors.releases_list()
    )
    changes = (
        selectors.release_diff(form.cleaned_data["from"], form.cleaned_data["to"]) if form.is_valid() else []
    )
    context = {"form": form, "changes": [(change, _coloured(change.text_diff)) for change in changes]}
    return render(request, "registry/release_diff.html", context, status=422 if form.errors else 200)


def _coloured(diff: list[str]) -> list[tuple[str, str]]:
    """Each line of a unified diff with its CSS class; the first two lines name the two versions."""
    colours = {"+": "diff-add", "-": "diff-del", "@": "diff-hunk"}
    return [
        ("diff-file" if index < 2 else colours.get(line[:1], ""), line) for index, line in enumerate(diff)
    ]


@login_required
def artifact_list(request: HttpRequest) -> HttpResponse:
    kind = request.GET.get("kind", "")
    context = {
        "page": paged(request, selectors.artifacts_latest(kind=kind)),
        "kinds": Artifact.Kind.choices,
        "filters": {"kind": kind},
    }
    return render_page(
        request, "registry/artifact_list.html", "registry/_partials/artifact_rows.html", context
    )


@login_required
def artifact_history(request: HttpRequest, kind: str, name: str) -> HttpResponse:
    versions = list(selectors.artifact_versions(kind, name))
    if not versions:
        raise Http404(f"No {kind} {name}.")
    context = {
        "kind": kind,
        "name": name,
        "versions": [
            (artifact, yaml.safe_dump(artifact.content, sort_keys=False, allow_unicode=True))
            for artifact in versions
        ],
        "diagram": mermaid_state_diagram(versions[0].content) if kind == Artifact.Kind.WORKFLOW else "",
    }
    return render(request, "registry/artifact_history.html", context)
