-- Every customer with a variant has exactly one message: none dropped (e.g. by rounding), none
-- doubled; holdout customers (no variant) have none.
select c.customer_id, count(m.customer_id) as messages
from {{ ref('stg_customers') }} as c
left join {{ ref('assignments') }} as a using (customer_id)
left join {{ ref('messages') }} as m using (customer_id)
group by c.customer_id, a.variant_id
having count(m.customer_id) <> case when a.variant_id is null then 0 else 1 end
