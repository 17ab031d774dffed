"""The body of a racing process for test_experiments (a module of its own: spawned processes import
it, and it imports no torch)."""


def race(url: str, study: str, keys: list[str], worker: int, queue) -> None:
    import sqlalchemy as sa

    from squeezelab.experiments.claims import Claims

    claims = Claims(sa.create_engine(url, connect_args={"timeout": 60}), study)
    queue.put([k for k in keys if claims.claim(k, 1000 + worker, None)])
