"""Flower glue shared by the site and the coordinator: the wire codec (a payload ⇄ a Flower RecordDict) and
the environment of every Flower process fedradval starts. The study's message contract itself lives in
``protocols/`` (numpy, pydantic and PyYAML only); this package is where Flower comes in."""
