"""One module per dataset format; `kpartial.data.READERS` maps format names to their readers."""
