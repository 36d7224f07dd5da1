"""The personal text's run: the 0 ms dispatch again, with attributes on every client and a text
that names them, rendered for each client by the worker at its send (core.templates), against
the plain text's run just before it on the same stack. Then the frequency cap's run: the plain
dispatch with FREQUENCY_CAP on (each batch's clients locked, counted and recorded).

The text is about as long as a real one of its kind; every client has both attributes, so that
every message is rendered and none is left unrendered.
"""

from bench.rig import Rig

# Above what any client of the run reaches: every message is checked and recorded, none held.
CAP = "3/24h"
TEXT = 'Здравствуйте, {{ name | default("друг") }}! Ваш заказ {{ order }} готов к выдаче.'


async def give_attributes(rig: Rig) -> None:
    """Every client a name and an order number of its own."""
    await rig.db.execute(
        "UPDATE client SET attributes = jsonb_build_object("
        "'name', 'Клиент ' || id, 'order', (100000 + id)::text)"
    )
