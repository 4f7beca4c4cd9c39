"""changedetect: dated polygons of new construction from satellite time series."""
__version__ = "0.1.0"
