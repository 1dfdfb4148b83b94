"""Domain Adaptive Hashing beyond the layers: the figures that explain a run.

``minicaffe.dah.figures`` draws, for one transfer pair, 2-D embeddings of source and target
features (with how far apart the domains are), the learning curve of every loss term, and a
retrieval grid. It needs matplotlib (``pip install 'minicaffe[plot]'``), imported only when a
figure is drawn, so importing this package never does.
"""
