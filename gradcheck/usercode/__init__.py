"""The learner's own code, as gradcheck runs it: which frames are theirs and the trimmed
traceback (`frames`), re-running it under another array namespace (`rebind`), rewriting the
statements a namespace cannot run as written (`rewrite`), and recording the values it binds
line by line (`capture`)."""
