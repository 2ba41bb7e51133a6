"""The boot path: what pxed answers a netbooting machine, and the
credentials that answer hands the management OS.

One boot answer, ``GET /ipxe/52:54:00:12:34:56`` say:

1. ``pxed.web.boot.BootFront`` sees the path before any routing, finds
   its format in ``render.FORMATS`` (the one table of the boot routes: the
   Klein routes in pxed/web/boot.py are declared from it too) and asks
   ``answers.BootAnswers.now``.
2. ``now`` answers from memory or not at all.  The client must be on a
   boot network (``networks``); the MAC's entry comes from the boot view
   (``view.BootView``: every machine's boot fields, current work and live
   credentials, read by ``snapshot.thd_load``), which must have seen every
   write made before the request came in.  ``decision.decide`` says
   whether the machine gets the management OS; if it does, the view must
   hold the credential the answer carries.  The answer is rendered once
   (``render``), counted in /metrics and recorded in the machine's events
   off the request's path (``answerlog.AnswerLog``, only when it changed).
3. When ``now`` cannot answer (a write not yet in the view, or a
   credential to mint), the request goes on to the Klein route, whose
   handler calls ``BootAnswers.answer``: it waits for the view's next
   load, mints the credential through ``credentials.Credentials`` (into the
   database, and into the view at once), and answers as ``now`` would, the
   same bytes.

The view loads again only after writes that can change an answer
(``snapshot.DEPENDS``, matched by the database pool against the tables,
kinds of write and columns each write sets, pxed.db.written): a log line,
a progress report or a machine's ``last_seen`` reload nothing, here or
(NOTIFY) on another server.

``credentials.Credentials`` is the one object that mints (boot answers),
looks up, admits, binds (the authenticator, BootInform) and spends
(enlistment) machine and enlistment credentials; their tokens derive from
the server's key (``key``).  Their queries stay ``thd_*`` functions in
pxed/db/ (``credentials``, ``enlist``), where every query of pxed is and
where revoking a work's credential shares the transaction that ends the
work."""
