-- segment_profiles accounts for every segmented customer once and its shares sum to 1.
with profiles as (
    select sum(customers) as customers, sum(share_of_customers) as share
    from {{ ref('segment_profiles') }}
),

segmented as (
    select count(*) as customers from {{ ref('segments') }}
)

select p.customers as profiled, s.customers as segmented, p.share
from profiles as p, segmented as s
where p.customers <> s.customers or abs(p.share - 1.0) > 0.01
