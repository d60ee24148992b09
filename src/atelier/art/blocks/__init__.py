"""Building blocks the engines are made of: networks (``vgg``, ``ncnn_format``), fast forms of
common layers (``upconv``, ``blockconv``, ``padding``), colour (``color``), optical flow
(``flow``), faces (``faces``), MicroAST's lattice filter (``lattice``), finishing (``finish``),
safe image decoding (``images``), weight files (``weights``) and devices (``devices``). None of
them paints on its own, and none imports an engine.
"""
