"""The async database engine and sessions (asyncpg), built once per process from settings."""

from pathlib import Path

import asyncpg
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from core.settings import Settings, get_settings

EMBEDDED_DATABASE = "mailing"


def embedded_database_url(data_dir: Path, database: str = EMBEDDED_DATABASE) -> str:
    """URL of the embedded PostgreSQL, which listens on a unix socket in its data directory."""
    return f"postgresql+asyncpg://postgres@/{database}?host={data_dir / 'pg'}"


def database_url(settings: Settings) -> str:
    return settings.database_url or embedded_database_url(settings.data_dir)


# Opening a connection (the socket and PostgreSQL's startup handshake) fails after this long:
# a database host that accepts and never answers costs this, not asyncpg's default 60 s.
CONNECT_TIMEOUT_SECONDS = 5.0
# Longest wait for a free connection of the pool (SQLAlchemy's default; the API waits less).
POOL_TIMEOUT_SECONDS = 30.0


def create_engine(settings: Settings, *, pool_timeout: float = POOL_TIMEOUT_SECONDS) -> AsyncEngine:
    return create_async_engine(
        database_url(settings),
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_timeout=pool_timeout,
        # A pooled connection is tried before use: the ones a restart of PostgreSQL killed
        # are dropped and new ones made, with no restart of the process.
        pool_pre_ping=True,
        connect_args={
            # A statement that hangs (a database that stopped answering) fails after this
            # long, so that an activity fails and is retried instead of holding its slot for
            # hours.
            "command_timeout": settings.database_statement_timeout_seconds,
            "timeout": CONNECT_TIMEOUT_SECONDS,
        },
    )


# PostgreSQL's own "not serving": SQLSTATE class 08 (a connection that failed, was refused or is
# gone, among them asyncpg's "closed in the middle of operation"), shutting down (57P01, 57P02),
# starting up or in recovery (57P03), no connection slot left (53300). Not 57014, a statement
# cancelled (a timeout of its own), nor anything about the statement itself.
_NOT_SERVING = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)
_DRIVER_MODULES = ("asyncpg", "sqlalchemy")


def database_unavailable(error: BaseException) -> bool:
    """Whether `error` means the database cannot be reached now (down, restarting, not
    answering in time, out of connections, or the pool had none free in time) rather than a
    fault of the statement (a constraint, bad data, a bug), which keeps its own answer.

    asyncpg raises a refused or timed-out connect as the OSError itself (ConnectionRefusedError,
    FileNotFoundError of a unix socket, TimeoutError), which SQLAlchemy does not wrap: such an
    error counts when it came out of the driver, not when other code raised it (a file read)."""
    if isinstance(error, exc.TimeoutError):  # the pool's
        return True
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        cause = error.__cause__
        while cause is not None:
            if isinstance(cause, _NOT_SERVING):
                return True
            cause = cause.__cause__
        return False
    if isinstance(error, _NOT_SERVING):
        return True
    return isinstance(error, OSError) and _raised_by_driver(error)


def _raised_by_driver(error: BaseException) -> bool:
    frame = error.__traceback__
    while frame is not None:
        module = str(frame.tb_frame.f_globals.get("__name__", ""))
        if module.partition(".")[0] in _DRIVER_MODULES:
            return True
        frame = frame.tb_next
    return False


SessionFactory = async_sessionmaker[AsyncSession]


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False)


class Database:
    """An engine and its session factory; one per process, disposed on shutdown."""

    def __init__(
        self, settings: Settings | None = None, *, pool_timeout: float = POOL_TIMEOUT_SECONDS
    ) -> None:
        self.engine = create_engine(settings or get_settings(), pool_timeout=pool_timeout)
        self.sessions = create_session_factory(self.engine)

    async def dispose(self) -> None:
        await self.engine.dispose()


def migrate(url: str) -> None:
    """Applies every migration (alembic upgrade head) to the database at url."""
    from alembic import command
    from alembic.config import Config

    from core.settings import PROJECT_ROOT

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
