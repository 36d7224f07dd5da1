"""The async database engine and sessions (asyncpg), built once per process from settings."""

from pathlib import Path

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


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        database_url(settings),
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_pre_ping=True,
        # A statement that hangs (a database that stopped answering) fails after this long,
        # so that an activity fails and is retried instead of holding its slot for hours.
        connect_args={"command_timeout": settings.database_statement_timeout_seconds},
    )


SessionFactory = async_sessionmaker[AsyncSession]


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False)


class Database:
    """An engine and its session factory; one per process, disposed on shutdown."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.engine = create_engine(settings or get_settings())
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
