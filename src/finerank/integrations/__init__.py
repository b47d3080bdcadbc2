"""finerank inside the frameworks people build retrieval with, one module and one extra each:

- :mod:`finerank.integrations.langchain`: ``FinerankRerank`` (a document compressor) and
  ``FinerankCrossEncoder`` (for LangChain's own ``CrossEncoderReranker``); ``pip install 'finerank[langchain]'``
- :mod:`finerank.integrations.llama_index`: ``FinerankRerank`` (a node postprocessor);
  ``pip install 'finerank[llama-index]'``
- :mod:`finerank.integrations.haystack`: ``FinerankRanker`` (a component); ``pip install 'finerank[haystack]'``

Each scores with a local finerank second stage (``auto`` unless named) or on a running finerank
server (``url=``). Nothing here is imported by ``import finerank``; see docs/integrations.md.
"""
