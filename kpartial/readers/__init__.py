"""Readers of published dataset formats, registered in `kpartial.data.READERS`."""
