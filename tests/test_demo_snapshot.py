"""Chapter 8's demo as the static book shows it: the widget's display carries a PNG picture of
its state next to the live widget view."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from test_demo import engine  # noqa: F401  (the fixture: chapter 8's engine on fixed candidates)

from rar_lite.book import demo


@pytest.fixture(scope="module")
def widget(engine: demo.DemoEngine) -> demo.Demo:  # noqa: F811
    return demo.build_demo(engine, persona="family night")


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_display_is_the_live_widget_plus_a_picture(widget: demo.Demo) -> None:
    before = widget._repr_mimebundle_()
    assert before["application/vnd.jupyter.widget-view+json"]["model_id"] == widget.box.model_id
    assert _image(before["image/png"]).format == "PNG"
    widget.run()
    after = widget._repr_mimebundle_()
    assert isinstance(widget.last, demo.DemoResult)
    assert _image(after["image/png"]).height > _image(before["image/png"]).height  # + ranking


def test_picture_shows_an_error_too(widget: demo.Demo) -> None:
    widget.liked.value, widget.request.value = "", " "
    widget.run()
    assert widget.last == "type a request or some movies you liked"
    assert _image(demo.snapshot_png(widget)).width == 1020  # 8.5 in at 120 dpi
