from fastapi import APIRouter

from api.auth import guarded
from api.deps import SessionDep, SettingsDep
from api.schemas.routes import RoutePublic
from api.services import routes as routes_service
from core.auth import Permission

router = APIRouter(prefix="/routes", tags=["routes"])


@router.get("", response_model=list[RoutePublic], **guarded(Permission.DISPATCHES_READ))
async def list_routes(session: SessionDep, settings: SettingsDep) -> list[RoutePublic]:
    """Every configured send route in priority order (the first that may serve a client and
    is up takes its message): its definition, never its token, and its circuit's health."""
    return await routes_service.list_routes(session=session, routes=settings.routes)
