"""From videos to a dataset: the MUSIC-21 ``splits``, the ingestion ``pipeline``, decoding (``media``) and the visual feature ``extractors``."""
