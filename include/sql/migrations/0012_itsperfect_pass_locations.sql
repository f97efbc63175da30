-- A stock pass remembers the locations it writes to (issue 11, review): a location mapped to the warehouse
-- while a pass is cut by the request budget would otherwise get only the pages read after the resume, and
-- keep whatever it held before for the barcodes of the earlier ones. A pass for other locations starts again.
ALTER TABLE itsperfect.stock_passes ADD COLUMN locations text[] NOT NULL DEFAULT '{}';
