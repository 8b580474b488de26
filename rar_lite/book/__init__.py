"""The book: its figures, chapter 8's demo, executing the notebooks and building the site,
and the offline browser check of the built pages.

May import: core, `data`, `retrieval`, `backends`, `reranking`, `loop`, `dialogue`,
`experiments`, `evaluation`.
"""
