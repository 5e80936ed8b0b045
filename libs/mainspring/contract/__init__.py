"""The bus contract: message models, subjects, streams and buckets, and the query models of the recorder API."""
