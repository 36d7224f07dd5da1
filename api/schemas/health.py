"""The probes' answers."""

from pydantic import BaseModel


class Liveness(BaseModel):
    status: str


class Health(BaseModel):
    status: str
    database: str
    temporal: str
