"""The napari skin: the dock widget, its worker and the layer glue. No torch at import."""
