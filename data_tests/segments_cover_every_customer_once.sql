-- Every customer in stg_customers has exactly one segment, and segments has no strangers.
-- Returns the customers that break this, with how many segment rows they have.
with customers as (
    select distinct customer_id from {{ ref('stg_customers') }} where customer_id is not null
),

assigned as (
    select customer_id, count(*) as segment_rows
    from {{ ref('segments') }}
    group by customer_id
)

select
    coalesce(c.customer_id, a.customer_id) as customer_id,
    coalesce(a.segment_rows, 0) as segment_rows,
    c.customer_id is null as unknown_customer
from customers as c
full outer join assigned as a using (customer_id)
where c.customer_id is null or coalesce(a.segment_rows, 0) <> 1
