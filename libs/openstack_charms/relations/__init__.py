"""Relation handlers: one object per endpoint, with readiness, a typed context and what it publishes."""

from .base import RelationHandler

__all__ = ["RelationHandler"]
