"""Migration operations of Baton's own."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db.migrations import AddIndex


class AddIndexWithoutBlockingWrites(AddIndexConcurrently):
    """AddIndex that builds the index CONCURRENTLY on PostgreSQL, so that the table's writers (the
    run engine, the decision log, reviewers) are not held for as long as a large table's index
    takes to build; a plain AddIndex elsewhere (SQLite). Its migration is `atomic = False`."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)
