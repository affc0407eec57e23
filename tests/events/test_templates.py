"""Tests of the simulator's data templates against the event catalogue."""

from __future__ import annotations

from vora.core.catalog import SUBSCRIBABLE_EVENTS
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.events.publisher import EventCatalog
from vora.events.templates import data_templates


def test_each_publishable_type_has_a_template_its_schema_accepts() -> None:
    """There is one template per publishable type, in the catalogue's order, each valid against its data schema."""
    templates = data_templates()
    assert list(templates) == list(SUBSCRIBABLE_EVENTS)
    catalog = EventCatalog(DEFAULT_SPEC_DIR)
    for event_type, data in templates.items():
        catalog.check(event_type, data)


def test_templates_are_fresh_copies() -> None:
    """Editing a returned template changes no later answer."""
    data_templates()["callRinging"]["callId"] = "edited"
    assert data_templates()["callRinging"]["callId"] != "edited"


def test_ringing_is_inbound_so_that_it_wakes_holdup_sessions() -> None:
    """The callRinging template is an inbound call: the one that wakes an identity's holdUpMode sessions."""
    assert data_templates()["callRinging"]["direction"] == "inbound"
