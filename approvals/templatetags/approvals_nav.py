"""The navigation's count of the approval requests waiting for the signed-in user."""

from django import template
from django.utils.safestring import SafeString

from ..views import nav_count

register = template.Library()


@register.simple_tag(takes_context=True)
def pending_approvals_count(context: template.Context) -> SafeString:
    """The count the page read with its rows (`pending_count`, the inbox), else read now."""
    poll_url = context["nav_urls"]["approval_count"]
    return nav_count(context["request"].user, poll_url, context.get("pending_count"))
