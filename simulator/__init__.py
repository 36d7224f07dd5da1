"""A local simulator of the external SMS-sending API, for running, testing and benchmarking."""

from simulator.app import DEFAULT_TOKEN, SimulatorConfig, SimulatorState, create_app

__all__ = ["DEFAULT_TOKEN", "SimulatorConfig", "SimulatorState", "create_app"]
