"""Glue to the deployment shared by the site and the coordinator: the wire codec (a payload ⇄ a Flower
RecordDict), the environment of every Flower process fedradval starts, the supported Flower range and release
version (``versions``), and the preflight checks of ``doctor`` (``preflight``: DNS, TLS chain, key, disk,
clock). The study's message contract itself lives in ``protocols/`` (numpy, pydantic and PyYAML only); this
package is where Flower and the network come in."""
