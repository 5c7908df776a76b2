"""The review database: case verdicts and sign-offs through SQLAlchemy 2, its schema owned by Alembic migrations.

Verdict rows are append-only: a reviewer who changes their mind adds a row, and the current verdict of a
(model version, image, reviewer) is the latest one, so the history of every judgement stays. Any SQLAlchemy URL
works (SQLite file by default, Postgres by `--db postgresql+psycopg2://...`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Engine,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERDICTS = ("agree", "disagree", "unsure")
DECISIONS = ("signed_off", "refused")
NOTE_MAX = 2000  # characters of a note or statement


class Base(DeclarativeBase):
    """Declarative base of the review tables."""


class CaseVerdict(Base):
    """One reviewer's judgement of one case of one model version (append-only)."""

    __tablename__ = "case_verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_version: Mapped[str] = mapped_column(String(128), index=True)
    image_id: Mapped[str] = mapped_column(String(64), index=True)
    reviewer: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(16))
    label_wrong: Mapped[bool] = mapped_column(Boolean, default=False)
    suggested_label: Mapped[int | None] = mapped_column(Integer, nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class SignOff(Base):
    """A reviewer's sign-off (or refusal) of a model version, with the statement and the review verdict JSON."""

    __tablename__ = "sign_offs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_version: Mapped[str] = mapped_column(String(128), index=True)
    reviewer: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    statement: Mapped[str] = mapped_column(Text)
    verdict_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


def now() -> dt.datetime:
    """The current time, UTC, to the second."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the one writer (two reviewers at once)
    cur.execute("PRAGMA busy_timeout=5000")  # ms a writer waits for the lock instead of failing
    cur.close()


def open_engine(url: str) -> Engine:
    """An engine for `url`, migrated to the newest schema (Alembic `upgrade head`)."""
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    upgrade(engine)
    return engine


def alembic_config(engine: Engine) -> Any:
    """Alembic's config pointing at the package's migrations, bound to `engine`."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the migrations up to `revision`."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def add_verdict(engine: Engine, row: dict) -> CaseVerdict:
    """Insert one verdict in its own transaction (all or nothing) and return it."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        item = CaseVerdict(**row, created_at=now())
        session.add(item)
    return item


def latest_verdicts(engine: Engine, model_version: str, image_id: str | None = None) -> list[CaseVerdict]:
    """The current verdict of every (image, reviewer) for the version (the latest row of each)."""
    latest = (
        select(func.max(CaseVerdict.id))
        .where(CaseVerdict.model_version == model_version)
        .group_by(CaseVerdict.image_id, CaseVerdict.reviewer)
    )
    query = select(CaseVerdict).where(CaseVerdict.id.in_(latest))
    if image_id is not None:
        query = query.where(CaseVerdict.image_id == image_id)
    with Session(engine) as session:
        return list(session.scalars(query.order_by(CaseVerdict.image_id, CaseVerdict.reviewer)))


def verdict_status(engine: Engine, model_version: str) -> tuple[set[str], set[str]]:
    """(image ids with a current verdict, image ids whose current verdict flags the label) of the version."""
    latest = (
        select(func.max(CaseVerdict.id))
        .where(CaseVerdict.model_version == model_version)
        .group_by(CaseVerdict.image_id, CaseVerdict.reviewer)
    )
    query = select(CaseVerdict.image_id, CaseVerdict.label_wrong).where(CaseVerdict.id.in_(latest))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return {r[0] for r in rows}, {r[0] for r in rows if r[1]}


def add_sign_off(engine: Engine, row: dict) -> SignOff:
    """Record a sign-off or refusal in its own transaction."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        item = SignOff(**row, created_at=now())
        session.add(item)
    return item


def sign_offs(engine: Engine, model_version: str) -> list[SignOff]:
    """Every sign-off of the version, oldest first."""
    with Session(engine) as session:
        query = select(SignOff).where(SignOff.model_version == model_version).order_by(SignOff.id)
        return list(session.scalars(query))


def verdict_dict(item: CaseVerdict) -> dict:
    """JSON form of a verdict row."""
    return {
        "image_id": item.image_id,
        "model_version": item.model_version,
        "reviewer": item.reviewer,
        "verdict": item.verdict,
        "label_wrong": bool(item.label_wrong),
        "suggested_label": item.suggested_label,
        "note": item.note,
        "created_at": item.created_at.isoformat() if item.created_at else None,
    }
