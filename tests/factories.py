import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from runs.models import Run


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct-horse-battery")

    @factory.post_generation
    def roles(self, create, extracted, **kwargs):
        if create and extracted:
            self.groups.set(Group.objects.filter(name__in=extracted))


class RunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Run

    workflow = "builtin.intake"
    workflow_version = "1"
    case_id = factory.Sequence(lambda n: f"CASE-{n}")
    input = factory.LazyFunction(lambda: {"text": "hello"})
    current_state = "classify"
    trace_id = factory.Faker("hexify", text="^" * 32)
    requested_by = factory.SubFactory(UserFactory)
    request_digest = "0" * 64
