"""The commission's lifecycle in one place: its statuses and the one job that paints it.

* :mod:`~atelier.service.commission.status`: the artwork's statuses (an enum) and the moves
  between them (one table, one :func:`~atelier.service.commission.status.move`).
* :mod:`~atelier.service.commission.stages`: the preview and the HD picture as two
  :class:`~atelier.service.commission.stages.Stage` records (job kind, key, watermark, upscale,
  status moves, mail).
* :mod:`~atelier.service.commission.job`: the one painting job function for both stages.

The buyer's verbs stay where the web calls them: ordering and the status view in
:mod:`atelier.service.artworks`, checkout, payment and downloads in :mod:`atelier.service.payments`.
"""
