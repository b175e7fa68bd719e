from django.apps import AppConfig


class DemoConfig(AppConfig):
    """Demo users and traffic for a first run; sits above every other app."""

    name = "demo"
