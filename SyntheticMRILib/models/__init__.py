"""Networks and trainable physics: the learnable contrast module (``contrast``) and the subcortical segmenter
(``segmenter``)."""
