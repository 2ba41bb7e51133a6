"""The boot answers' record in the event log (pxed.boot.answerlog): what
a batch of answers writes, on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from pxed.boot.answerlog import Answer, Answers, Served, thd_write
from pxed.db import migrate
from pxed.db.pool import make_engine
from pxed.db.schema import events


def rows(conn) -> list[tuple]:
    q = sa.select(
        events.c.id, events.c.target, events.c.action, events.c.detail, events.c.count
    ).order_by(events.c.id)
    return [tuple(r) for r in conn.execute(q)]


def test_a_batch_keeps_each_machines_answers_in_order_and_counts_repeats(database_url):
    engine = make_engine(database_url)
    migrate.prepare(engine)
    first = [
        Answers([Answer(1, "pxe", "a", "x")], {}),
        Served(1, 7),
        # Repeats of "a" not yet known by row, then a change to "b".
        Answers([Answer(1, "pxe", "a", "y", times=3), Answer(1, "pxe", "b", "z")], {}),
        Served(1, 7),
        Answers([Answer(2, "pxe", "a", "")], {}),
    ]
    with engine.begin() as conn:
        found = thd_write(conn, first)
        written = rows(conn)
    (a1, _, b1, a2) = (r[0] for r in written)
    assert [r[1:] for r in written] == [
        ("1", "boot.answer", "a; y", 4),
        ("1", "work.netboot", "work=7", 1),
        ("1", "boot.answer", "b; z", 1),
        ("2", "boot.answer", "a", 1),
    ]
    assert found == [{1: a1}, {}, {1: b1}, {}, {2: a2}]

    second = [
        Answers([Answer(1, "pxe", "b", "w", times=2)], {1: b1}),
        # Not known by row: found by its key, in the log.
        Answers([Answer(2, "pxe", "a", "q")], {}),
        Served(1, 7),
        Served(1, 8),
        Answers([Answer(3, "pxe", "c", "")], {}),
    ]
    with engine.begin() as conn:
        found = thd_write(conn, second)
        written = rows(conn)
    assert [r[1:] for r in written] == [
        ("1", "boot.answer", "a; y", 4),
        ("1", "work.netboot", "work=7", 1),
        ("1", "boot.answer", "b; w", 3),
        ("2", "boot.answer", "a; q", 2),
        ("1", "work.netboot", "work=8", 1),
        ("3", "boot.answer", "c", 1),
    ]
    assert found == [{1: b1}, {2: a2}, {}, {}, {3: written[-1][0]}]
    with engine.begin() as conn:
        last_at = conn.execute(sa.select(events.c.last_at).where(events.c.id == a1)).scalar()
    assert last_at is not None, "a row standing for several answers has its last one's time"
    engine.dispose()
