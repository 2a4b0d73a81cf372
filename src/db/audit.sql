-- Ledger invariants, one row per violation (kind, subject, detail). Runs
-- unchanged on SQLite and PostgreSQL.
SELECT 'balance_mismatch' AS kind, CAST(u.user_id AS TEXT) AS subject,
       'balance ' || CAST(COALESCE(c.amount, 0) AS TEXT) || ' but the ledger sums to '
         || CAST(COALESCE(l.total, 0) AS TEXT) AS detail
  FROM (SELECT user_id FROM credits UNION SELECT user_id FROM credit_transactions) u
  LEFT JOIN credits c ON c.user_id = u.user_id
  LEFT JOIN (SELECT user_id, SUM(amount) AS total FROM credit_transactions GROUP BY user_id) l
    ON l.user_id = u.user_id
 WHERE COALESCE(c.amount, 0) <> COALESCE(l.total, 0)
UNION ALL
SELECT 'negative_balance', CAST(user_id AS TEXT), 'balance ' || CAST(amount AS TEXT)
  FROM credits WHERE amount < 0
UNION ALL
SELECT 'charge_count', CAST(g.id AS TEXT),
       g.status || ' generation with ' || CAST(COUNT(t.id) AS TEXT) || ' charges'
  FROM generations g
  LEFT JOIN credit_transactions t ON t.generation_id = g.id AND t.type = 'generation'
 GROUP BY g.id, g.status, g.run_id
HAVING COUNT(t.id) <> CASE WHEN g.run_id IS NULL THEN 1 ELSE 0 END
UNION ALL
-- A run's nodes are charged by one row naming the run: exactly one, of
-- exactly the sum of the nodes' shares.
SELECT 'run_charge', CAST(r.id AS TEXT),
       'run with ' || CAST(COALESCE(c.n, 0) AS TEXT) || ' charges of '
         || CAST(-COALESCE(c.total, 0) AS TEXT) || ' but its nodes cost '
         || CAST(COALESCE(s.total, 0) AS TEXT)
  FROM runs r
  LEFT JOIN (SELECT run_id, COUNT(*) AS n, SUM(amount) AS total FROM credit_transactions
              WHERE type = 'generation' AND run_id IS NOT NULL GROUP BY run_id) c
    ON c.run_id = r.id
  LEFT JOIN (SELECT run_id, SUM(run_cost) AS total FROM generations
              WHERE run_id IS NOT NULL GROUP BY run_id) s
    ON s.run_id = r.id
 WHERE COALESCE(c.n, 0) <> 1 OR -COALESCE(c.total, 0) <> COALESCE(s.total, 0)
UNION ALL
SELECT 'run_charge', CAST(t.id AS TEXT), 'charge for a run that does not exist'
  FROM credit_transactions t
  LEFT JOIN runs r ON r.id = t.run_id
 WHERE t.run_id IS NOT NULL AND r.id IS NULL
UNION ALL
SELECT 'refund_count', CAST(g.id AS TEXT),
       g.status || ' generation with ' || CAST(COUNT(t.id) AS TEXT) || ' refunds'
  FROM generations g
  LEFT JOIN credit_transactions t ON t.generation_id = g.id AND t.type = 'refund'
 GROUP BY g.id, g.status
HAVING (g.status IN ('failed', 'canceled') AND COUNT(t.id) <> 1) OR COUNT(t.id) > 1
UNION ALL
-- (a run's node: its share of the run's charge minus its refund)
SELECT 'credits_used_mismatch', CAST(g.id AS TEXT),
       'credits_used ' || CAST(g.credits_used AS TEXT) || ' but charges minus refunds is '
         || CAST(COALESCE(g.run_cost, 0) - COALESCE(SUM(t.amount), 0) AS TEXT)
  FROM generations g
  LEFT JOIN credit_transactions t
    ON t.generation_id = g.id AND t.type IN ('generation', 'refund')
 WHERE g.status IN ('success', 'failed', 'canceled')
 GROUP BY g.id, g.credits_used, g.run_id, g.run_cost
HAVING (g.run_id IS NOT NULL OR COUNT(t.id) > 0)
   AND g.credits_used <> CASE WHEN g.run_id IS NULL THEN 0 ELSE COALESCE(g.run_cost, 0) END
                         - COALESCE(SUM(t.amount), 0)
UNION ALL
SELECT 'payment_row_sign', CAST(id AS TEXT), type || ' row of ' || CAST(amount AS TEXT)
  FROM credit_transactions
 WHERE (type = 'purchase' AND payment_id IS NOT NULL AND amount <= 0)
    OR (type IN ('payment_refund', 'payment_dispute') AND amount >= 0)
    OR (type = 'payment_uncollected' AND amount <> 0)
UNION ALL
SELECT 'purchase_count', CAST(payment_id AS TEXT),
       CAST(COUNT(*) AS TEXT) || ' purchase rows for one payment'
  FROM credit_transactions
 WHERE type = 'purchase' AND payment_id IS NOT NULL
 GROUP BY payment_id
HAVING COUNT(*) > 1
