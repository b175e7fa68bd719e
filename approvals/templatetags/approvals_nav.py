"""The navigation's count of the approval requests waiting for the signed-in user."""

from django import template

from ..views import nav_count

register = template.Library()


@register.inclusion_tag("approvals/_partials/nav_count.html", takes_context=True)
def pending_approvals_count(context: template.Context) -> dict:
    """The count the page read with its rows (`pending_count`, the inbox), else read now."""
    return nav_count(context["request"].user, context.get("pending_count"))
