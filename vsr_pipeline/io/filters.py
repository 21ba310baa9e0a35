"""One FFmpeg filter on decoded frames, through PyAV's filter graph (deinterlacing, resampling)."""

from __future__ import annotations

from ..errors import InputError, describe


def one_filter_graph(frame, name: str, args: str, failure: str):
    """A configured ``buffer -> name=args -> buffersink`` graph for frames like ``frame`` (its
    size, pixel format and time base). ``failure``: what could not be done, for the one-line
    :class:`InputError` raised when FFmpeg refuses the graph."""
    import av

    try:
        graph = av.filter.Graph()
        source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format, time_base=frame.time_base or 1)
        step = graph.add(name, args)
        sink = graph.add("buffersink")
        source.link_to(step)
        step.link_to(sink)
        graph.configure()
    except (av.FFmpegError, ValueError) as exc:
        raise InputError(f"{failure}: {describe(exc)}") from None
    return graph
