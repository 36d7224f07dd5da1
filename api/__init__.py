"""The HTTP edge: FastAPI app, routers, request and response schemas."""
