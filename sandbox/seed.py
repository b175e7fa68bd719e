"""Demo data for the sandbox: knowledge articles, the cases of the demo runs (CASE-1001..1005),
the data warehouse's batches and the data catalog's outages.

The data migration applies it; `seed()` can be called again after a flush. It only adds
what is missing, so it never undoes what a demo run did to a case.
"""

from django.apps import apps as global_apps
from django.apps.registry import Apps

ARTICLES = (
    (
        "refund-policy",
        "Refund policy",
        "You can ask for your money back within 30 days of delivery. Refunds go to the original "
        "payment method; refunds over 500 need a second approval from a support lead.",
        ["refunds", "billing"],
    ),
    (
        "refund-timelines",
        "When will I see my refund?",
        "Card refunds reach the account in 5 to 10 business days after we issue them. Bank "
        "transfers take up to 3 business days. The order page shows the refund once issued.",
        ["refunds", "billing"],
    ),
    (
        "damaged-or-wrong-items",
        "Damaged or wrong items",
        "If an order arrives damaged or is not what you ordered, send a photo within 14 days. We "
        "replace the item or refund it in full, including shipping, without asking for a return.",
        ["refunds", "orders", "shipping"],
    ),
    (
        "shipping-times",
        "Shipping times",
        "Standard shipping takes 3 to 5 business days, express 1 to 2. Orders placed before 2 pm "
        "leave the warehouse the same day. Every shipment has a tracking link in the order email.",
        ["shipping", "orders"],
    ),
    (
        "lost-or-late-packages",
        "Lost or late packages",
        "A package that has not arrived 10 days after shipping is treated as lost: we open a "
        "claim with the carrier and send a replacement or a refund, whichever the customer prefers.",
        ["shipping", "orders", "refunds"],
    ),
    (
        "international-shipping",
        "International shipping and customs",
        "We ship to 40 countries. Customs duties are paid by the recipient unless the order page "
        "says duties are included. Delivery abroad takes 7 to 14 business days.",
        ["shipping"],
    ),
    (
        "password-reset",
        "Resetting a password",
        "Use 'Forgot password' on the login page to get a reset link valid for one hour. If the "
        "email does not arrive, check the spam folder, then ask support to verify the account.",
        ["account", "login"],
    ),
    (
        "locked-account",
        "Locked accounts and two-factor recovery",
        "After 5 failed logins an account is locked for 30 minutes. Customers who lost their "
        "two-factor device can recover access with a backup code or an identity check by support.",
        ["account", "login", "security"],
    ),
)

# (case_id, customer, subject); 1001 to 1003 are the cases of the demo runs.
CASES = (
    ("CASE-1001", "Dana Whitfield", "I want my money back for order #123"),
    ("CASE-1002", "Ravi Menon", "The export page shows an error since this morning"),
    ("CASE-1003", "Lena Sorensen", "How do I add a second reviewer to my team?"),
    ("CASE-1004", "Tomás Ortega", "My package has not arrived after 12 days"),
    ("CASE-1005", "Mei Chen", "Locked out of my account after a password reset"),
)


ORDER_COLUMNS = {"order_id": "string", "customer_id": "string", "amount": "number", "currency": "string"}


def _orders(count: int, **overrides) -> list[dict]:
    rows = [
        {"order_id": f"O-{n:04d}", "customer_id": f"C-{n % 5:03d}", "amount": 20 + 7 * n, "currency": "EUR"}
        for n in range(1, count + 1)
    ]
    for index, changes in overrides.items():
        rows[int(index.removeprefix("row"))].update(changes)
    return rows


# (slug, title, owner, source, upstream, expected columns, baseline rows)
DATASETS = (
    (
        "orders_daily",
        "Orders, daily",
        "commerce-data",
        "warehouse.orders",
        ["checkout_events"],
        ORDER_COLUMNS,
        8,
    ),
    (
        "customers",
        "Customers",
        "crm-data",
        "crm.export",
        [],
        {"customer_id": "string", "email": "string", "country": "string"},
        3,
    ),
)
# (dataset, batch id, rows): a clean day, a day with a null key and a negative amount, a day
# whose producer dropped a column and added one, two more clean days (which meet the catalog's
# outages when published) and a clean customer export.
BATCHES = (
    ("orders_daily", "2026-11-19", _orders(8)),
    ("orders_daily", "2026-11-20", _orders(8, row2={"customer_id": None}, row5={"amount": -45})),
    (
        "orders_daily",
        "2026-11-21",
        [{k: v for k, v in row.items() if k != "currency"} | {"coupon": "WINTER"} for row in _orders(7)],
    ),
    ("orders_daily", "2026-11-22", _orders(8)),
    ("orders_daily", "2026-11-23", _orders(8)),
    (
        "customers",
        "2026-11-20",
        [
            {"customer_id": "C-000", "email": "ana@example.org", "country": "PT"},
            {"customer_id": "C-001", "email": "bo@example.org", "country": "SE"},
            {"customer_id": "C-002", "email": "cy@example.org", "country": "FR"},
        ],
    ),
)

# (operation, subject, refusals): the data catalog refuses the first attempt of each publication
# of 2026-11-22, so its run retries once and succeeds; and the first four of 2026-11-23, one more
# than the engine's three attempts, so its run is dead-lettered and a retry from the dead-letter
# queue goes through on its second attempt.
OUTAGES = (
    ("publish_metadata", "orders_daily/2026-11-22", 1),
    ("publish_metadata", "orders_daily/2026-11-23", 4),
)


def seed(apps: Apps = global_apps) -> None:
    """Create the demo articles, cases, datasets, batches and outages that are missing (`apps` is
    a migration's state)."""
    article_model = apps.get_model("sandbox", "KnowledgeArticle")
    case_model = apps.get_model("sandbox", "SupportCase")
    for slug, title, body, tags in ARTICLES:
        article_model.objects.get_or_create(slug=slug, defaults={"title": title, "body": body, "tags": tags})
    for case_id, customer, subject in CASES:
        case_model.objects.get_or_create(case_id=case_id, defaults={"customer": customer, "subject": subject})
    try:
        dataset_model = apps.get_model("sandbox", "Dataset")
        batch_model = apps.get_model("sandbox", "DatasetBatch")
    except LookupError:  # an early migration's state: the warehouse came later
        return
    for slug, title, owner, source, upstream, columns, baseline in DATASETS:
        dataset_model.objects.get_or_create(
            slug=slug,
            defaults={
                "title": title,
                "owner": owner,
                "source": source,
                "upstream": upstream,
                "expected_columns": columns,
                "baseline_rows": baseline,
            },
        )
    for slug, batch_id, rows in BATCHES:
        batch_model.objects.get_or_create(
            dataset=dataset_model.objects.get(slug=slug), batch_id=batch_id, defaults={"rows": rows}
        )
    try:
        outage_model = apps.get_model("sandbox", "Outage")
    except LookupError:  # the outages came later still
        return
    for operation, subject, refusals in OUTAGES:
        outage_model.objects.get_or_create(
            operation=operation, subject=subject, defaults={"refusals": refusals}
        )
