"""Zero-shot image classification with POMP prompts: ``tools/eval_zeroshot.py`` (:mod:`.cli`). The class embeddings
come from :func:`pomp_plugins.prompt.class_embeddings`; the images, their features and the accuracy counts from
:mod:`pomp_plugins.images`."""
