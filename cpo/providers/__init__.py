"""AI service providers: one interface per step, one module per vendor, one registry."""

from cpo.providers.base import get_provider_factory, register_provider

__all__ = ["get_provider_factory", "register_provider"]
