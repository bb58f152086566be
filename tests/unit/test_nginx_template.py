"""The app template is compiled once per version of its file: an operator's edit is picked up at once."""

import os
from pathlib import Path

from shipline.config import Settings
from shipline.discovery.instances import Instance
from shipline.discovery.nginx import render_app


def test_an_edited_template_is_used_on_the_next_render(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    template = tmp_path / "app.conf.j2"
    instances = [Instance(app="shop", env="prod", ip="127.0.0.1", port=31000)]
    template.write_text("# one {{ upstream }} {{ instances | join(',') }}\n")
    os.utime(template, ns=(1_000_000_000, 1_000_000_000))
    assert render_app("shop", "prod", instances, settings=settings, template=template) == (
        "# one shop_prod 127.0.0.1:31000\n"
    )
    template.write_text("# two {{ server_name }}\n")
    os.utime(template, ns=(2_000_000_000, 2_000_000_000))
    assert render_app("shop", "prod", instances, settings=settings, template=template) == (
        "# two shop.prod.localhost\n"
    )
