"""Documents that differ from a valid one at one place: what a schema check must agree on."""

PROBES = [None, True, False, 0, 1, -1, 1.0, 1.5, "", "x", "read", "restricted", [], ["x"], [1], {}, {"x": 1}]


def variants(value):
    """`value` itself, then every document that differs from it at one place."""
    yield value
    if isinstance(value, dict):
        yield {**value, "unknown_field": "x"}
        for key, item in value.items():
            yield {k: v for k, v in value.items() if k != key}
            for changed in variants(item):
                yield {**value, key: changed}
            for probe in PROBES:
                yield {**value, key: probe}
    elif isinstance(value, list):
        for index, item in enumerate(value):
            for changed in [*variants(item), *PROBES]:
                yield [*value[:index], changed, *value[index + 1 :]]
