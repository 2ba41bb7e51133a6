"""What a write is named for DBPool.watch's watchers (pxed.db.written):
each way pxed writes, and the private part of SQLAlchemy it reads."""

from __future__ import annotations

import sqlalchemy as sa

from pxed.db import written
from pxed.db.schema import events, machine_logs, machines


def test_an_update_names_its_table_its_kind_and_the_columns_it_sets():
    update = machines.update().where(machines.c.id == 1).values(last_seen=None, state="x")
    assert written.names(update, []) == {
        "machines",
        "machines:update",
        "machines.last_seen",
        "machines.state",
    }


def test_columns_given_as_columns_in_order_or_at_execution_are_named():
    by_column = machines.update().where(machines.c.id == 1).values({machines.c.managed: True})
    assert written.set_columns(by_column, []) == {"managed"}
    ordered = machines.update().ordered_values((machines.c.name, "a"), ("architecture", "b"))
    assert written.set_columns(ordered, []) == {"name", "architecture"}
    at_execution = machines.update().where(machines.c.id == sa.bindparam("row"))
    assert written.set_columns(at_execution, [{"row": 1, "managed": False}]) == {"managed"}


def test_the_boot_answers_repeats_name_what_they_set():
    # events.thd_add_repeats: bound parameters in the SET clause.
    repeats = (
        events.update()
        .where(events.c.id == sa.bindparam("row"))
        .values(count=events.c.count + sa.bindparam("times"), detail=sa.bindparam("detail"))
    )
    assert written.set_columns(repeats, [{"row": 1, "times": 2, "detail": "d"}]) == {
        "count",
        "detail",
    }


def test_inserts_and_deletes_name_their_table_and_kind():
    assert written.names(machine_logs.insert().values(message="m"), []) == {
        "machine_logs",
        "machine_logs:insert",
    }
    assert written.names(machines.delete().where(machines.c.id == 1), []) == {
        "machines",
        "machines:delete",
    }
    assert written.names(sa.select(machines.c.id), []) == set()


def test_sqlalchemy_still_keeps_an_updates_values_where_this_reads_them():
    """Fails loudly when SQLAlchemy changes: without the attribute every
    column of the table is named, and a log line's last_seen would reload
    the boot view again (tests/web/test_bootview.py would fail too)."""
    update = machines.update().values(last_seen=None)
    values = getattr(update, written.PRIVATE)
    assert set(values) == {"last_seen"}
    assert getattr(machines.update(), written.PRIVATE) is None


def test_an_update_whose_columns_cannot_be_told_names_every_column():
    class Changed(sa.Update):
        # As if a later SQLAlchemy kept its values elsewhere.
        _values = ("not", "a", "mapping")

    assert written.set_columns(Changed(machines), []) == set(machines.c.keys())
