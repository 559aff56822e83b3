"""The renderer kit: pieces that several families share (no family imports another family).

* :mod:`~cookbook.renderers.kit.segments`: structural text vs literal content (:class:`Lit`,
  :class:`SegmentWriter`), Jinja's ``|string`` and ``tojson``.
* :mod:`~cookbook.renderers.kit.thinking`: where reasoning is in a message, ``<think>`` framing.
* :mod:`~cookbook.renderers.kit.parsing`: sampled text -> message (think blocks, tool-call blocks, arguments).
* :mod:`~cookbook.renderers.kit.tools`: JSON and XML tool calls, declaration scaffolding, tool-response runs.
* :mod:`~cookbook.renderers.kit.vision`: image parts -> ``ImageChunk`` s (image bytes, PNG/JPEG headers, each
  vision family's token count).

The token-level algorithms (flattening, weights, the ``parse_response`` template method, the disable-thinking
refusal) live in :class:`cookbook.renderers.base.Renderer`.
"""
