"""Study user attributes that can be rewritten only while they exist, and removed by exactly one
process: what keeps a shared study's worker registrations bounded (kronos_exp/search/workers.py).

Optuna's API sets a study attribute (creating it when absent) but never removes one, and cannot
tell two processes apart that set the same one at once. Two statements on Optuna's own
``study_user_attributes`` table (its schema, in every storage version) do both: a DELETE that
removes a row reports whether this process removed it (of two that race, one does), and an
UPDATE that finds no row reports it instead of creating one. Values are stored as Optuna stores
them (JSON), so Optuna reads them back as usual.
"""
from __future__ import annotations

import json
from typing import Any

TABLE = "study_user_attributes"


class StudyRecords:
    """The user attributes of study ``study_name`` in the database at ``url``."""

    def __init__(self, url: str, study_name: str):
        import sqlalchemy

        from .study import rdb_storage

        storage = rdb_storage(url)  # the tables exist once it opened
        self.engine = storage.engine
        self.study_id = storage.get_study_id_from_name(study_name)
        self.table = sqlalchemy.Table(TABLE, sqlalchemy.MetaData(), autoload_with=self.engine)

    def _where(self, key: str):
        return (self.table.c.study_id == self.study_id) & (self.table.c.key == key)

    def rewrite(self, key: str, value: Any) -> bool:
        """Set ``key`` to ``value`` where it exists; False (nothing written) where it does not."""
        with self.engine.begin() as connection:
            done = connection.execute(self.table.update().where(self._where(key)).values(value_json=json.dumps(value)))
        return done.rowcount == 1

    def remove(self, key: str) -> bool:
        """Remove ``key``; True only for the process whose statement removed it."""
        with self.engine.begin() as connection:
            done = connection.execute(self.table.delete().where(self._where(key)))
        return done.rowcount == 1

    def close(self) -> None:
        self.engine.dispose()
