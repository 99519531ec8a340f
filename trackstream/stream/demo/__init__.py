"""The live web demo: a page where a person drags and the streamed video follows (``python -m trackstream.stream.demo``)."""
