from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.templatetags.static import static
from django.urls import include, path
from django.utils.functional import lazy
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    # Where browsers look for the icon of a page that names none (the API docs, the admin).
    path("favicon.ico", RedirectView.as_view(url=lazy(static, str)("favicon.svg"), permanent=True)),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("runs/", include("runs.urls")),
    path("registry/", include("registry.urls")),
    path("policy/", include("policy.urls")),
    path("approvals/", include("approvals.urls")),
    path("replays/", include("replays.urls")),
    path("evidence/", include("evidence.urls")),
    path("monitoring/", include("monitoring.urls")),
    path("", include("monitoring.metrics_urls")),
    path("api/v1/", include("controlplane.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # A page for people: one not signed in is sent to sign in, as on every other page.
    path(
        "api/docs/",
        login_required(SpectacularSwaggerSplitView.as_view(url_name="api-schema")),
        name="api-docs",
    ),
    path("admin/", admin.site.urls),
]

handler400 = "controlplane.views.bad_request"
handler403 = "controlplane.views.permission_denied"
handler404 = "controlplane.views.page_not_found"
handler500 = "controlplane.views.server_error"
