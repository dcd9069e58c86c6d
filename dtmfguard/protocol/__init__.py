"""Sans-I/O wire formats: bytes in, values and events out, values out as bytes.

``bencode`` and ``ng`` (the rtpengine NG control protocol), ``sdp`` (RFC 8866 bodies and
the proxy rewrite), ``rtp`` (RFC 3550 RTP/RTCP) and ``rfc4733`` (telephone-events). No
module here opens a socket, awaits, or reads a clock; transports and the session runner
do that and hand these modules bytes and media time.
"""
