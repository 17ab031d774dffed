"""Exactly-once ownership of a study's points (grid points, or trial slots of random / TPE), in the
same database as the Optuna study.

Optuna's GridSampler picks an unvisited grid point at random in each process, so two workers that ask
at the same moment can run the same point. Here a point belongs to the trial whose row holds its key:
the row is created by an INSERT under a primary key (exactly one concurrent INSERT succeeds, in
SQLite and PostgreSQL alike), and handed to a new trial only by a compare-and-swap UPDATE from a
trial that failed (e.g. whose worker was killed and whose heartbeat went stale), which again
exactly one worker wins.
"""

from __future__ import annotations

import sqlalchemy as sa

_META = sa.MetaData()
CLAIMS = sa.Table(
    "squeezelab_claims", _META,
    sa.Column("study", sa.String(512), primary_key=True),
    sa.Column("key", sa.String(2048), primary_key=True),
    sa.Column("trial_id", sa.Integer, nullable=False),
)


class Claims:
    def __init__(self, engine: sa.Engine, study: str):
        self.engine, self.study = engine, study
        _META.create_all(engine, checkfirst=True)

    def holders(self) -> dict[str, int]:
        """key -> trial id holding it."""
        with self.engine.connect() as c:
            rows = c.execute(sa.select(CLAIMS.c.key, CLAIMS.c.trial_id).where(CLAIMS.c.study == self.study))
            return {k: t for k, t in rows}

    def claim(self, key: str, trial_id: int, previous: int | None) -> bool:
        """Give ``key`` to ``trial_id``: a new row if nobody holds it (previous None), else a swap from
        ``previous``. True for exactly one of any set of concurrent callers."""
        if previous is None:
            try:
                with self.engine.begin() as c:
                    c.execute(sa.insert(CLAIMS).values(study=self.study, key=key, trial_id=trial_id))
                return True
            except sa.exc.IntegrityError:
                return False
        with self.engine.begin() as c:
            done = c.execute(sa.update(CLAIMS).where(CLAIMS.c.study == self.study, CLAIMS.c.key == key,
                                                     CLAIMS.c.trial_id == previous).values(trial_id=trial_id))
            return done.rowcount == 1
